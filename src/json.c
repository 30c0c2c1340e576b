/* json — strict single-pass parser for flat request objects, and string escaping. See json.h. */
#include "json.h"

#include <errno.h>
#include <string.h>

#include "fmt.h"
#include "lit.h"
#include "utf8.h"

struct jp {
    const unsigned char *p, *end;
};

/* jp_string() flags: why a string is not usable as a field value. */
#define JS_TOO_LONG 1u  /* unescaped length > cap */
#define JS_BAD_UTF8 2u  /* raw bytes that are not UTF-8 */
#define JS_LONE_SURR 4u /* \uD800-\uDFFF escape without its pair */

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Skip bytes that need no attention inside a string: 0x20..0x7f except '"' and '\\'.
   Eight at a time (userIds are ~10-40 bytes: most fit in a few words), then bytewise. */
static inline const unsigned char *plain_run(const unsigned char *p, const unsigned char *end)
{
    while (end - p >= 8) {
        uint64_t v, q, b;
        memcpy(&v, p, 8);
        q = v ^ (ONES * '"');
        b = v ^ (ONES * '\\');
        /* Each term is non-zero iff some byte is < 0x20, == '"', == '\\', >= 0x80. */
        if (((v - ONES * 0x20) & ~v & HIGHS) | ((q - ONES) & ~q & HIGHS) |
            ((b - ONES) & ~b & HIGHS) | (v & HIGHS))
            break;
        p += 8;
    }
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
        p++;
    return p;
}

static inline int hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

/* Append k unescaped bytes; past cap only the length keeps counting. */
static inline void put(char *out, size_t cap, size_t *len, unsigned *fl, const void *src, size_t k)
{
    if (out && !(*fl & JS_TOO_LONG)) {
        if (cap - *len >= k)
            memcpy(out + *len, src, k);
        else
            *fl |= JS_TOO_LONG;
    }
    *len += k;
}

/* Scan a string body; j->p is just past the opening quote, and ends just past the closing one.
   Unescapes into out[cap] when out != NULL (else only validates). Returns 0 with *flags saying
   whether the value is usable, or JSON_E_SYNTAX (unterminated, raw control char, bad escape). */
static int jp_string(struct jp *j, char *out, size_t cap, size_t *olen, unsigned *flags)
{
    const unsigned char *p = j->p, *end = j->end;
    size_t len = 0;
    unsigned fl = 0;

    for (;;) {
        const unsigned char *run = p;
        p = plain_run(p, end);
        if (p != run)
            put(out, cap, &len, &fl, run, (size_t)(p - run));
        if (p >= end)
            return JSON_E_SYNTAX;
        unsigned c = *p;
        if (c == '"') {
            p++;
            break;
        }
        if (c < 0x20)
            return JSON_E_SYNTAX;
        if (c >= 0x80) {
            size_t k = utf8_seq(p, (size_t)(end - p));
            if (k == 0) {
                fl |= JS_BAD_UTF8;
                p++; /* keep scanning for the closing quote: syntax errors still win */
            } else {
                put(out, cap, &len, &fl, p, k);
                p += k;
            }
            continue;
        }
        /* backslash */
        if (end - p < 2)
            return JSON_E_SYNTAX;
        unsigned char ch;
        switch (p[1]) {
        case '"': ch = '"'; break;
        case '\\': ch = '\\'; break;
        case '/': ch = '/'; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'n': ch = '\n'; break;
        case 'r': ch = '\r'; break;
        case 't': ch = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            unsigned char u8[4];
            size_t k;
            if (end - p < 6 || hex4(p + 2, &cp))
                return JSON_E_SYNTAX;
            p += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                /* A high surrogate needs "\uDC00-DFFF" right after it; if what follows is any
                   other escape it is left for the next round and this one is lone. */
                if (end - p >= 6 && p[0] == '\\' && p[1] == 'u' && !hex4(p + 2, &lo) &&
                    lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                } else {
                    fl |= JS_LONE_SURR;
                    continue;
                }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fl |= JS_LONE_SURR;
                continue;
            }
            if (cp < 0x80) {
                u8[0] = (unsigned char)cp;
                k = 1;
            } else if (cp < 0x800) {
                u8[0] = (unsigned char)(0xC0 | cp >> 6);
                u8[1] = (unsigned char)(0x80 | (cp & 0x3F));
                k = 2;
            } else if (cp < 0x10000) {
                u8[0] = (unsigned char)(0xE0 | cp >> 12);
                u8[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
                u8[2] = (unsigned char)(0x80 | (cp & 0x3F));
                k = 3;
            } else {
                u8[0] = (unsigned char)(0xF0 | cp >> 18);
                u8[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
                u8[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
                u8[3] = (unsigned char)(0x80 | (cp & 0x3F));
                k = 4;
            }
            put(out, cap, &len, &fl, u8, k);
            continue;
        }
        default:
            return JSON_E_SYNTAX;
        }
        put(out, cap, &len, &fl, &ch, 1);
        p += 2;
    }
    j->p = p;
    *olen = len;
    *flags = fl;
    return 0;
}

static inline void jp_ws(struct jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t'))
        j->p++;
}

static inline bool is_digit(unsigned c)
{
    return c - '0' < 10;
}

/* Scan a number token per the RFC 8259 grammar; *is_int when it has no fraction and no exponent. */
static int jp_number(struct jp *j, bool *is_int)
{
    const unsigned char *p = j->p, *end = j->end;
    bool integ = true;

    if (p < end && *p == '-')
        p++;
    if (p >= end || !is_digit(*p))
        return JSON_E_SYNTAX;
    if (*p++ != '0')
        while (p < end && is_digit(*p))
            p++;
    if (p < end && *p == '.') {
        integ = false;
        if (++p >= end || !is_digit(*p))
            return JSON_E_SYNTAX;
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        integ = false;
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit(*p))
            return JSON_E_SYNTAX;
        while (p < end && is_digit(*p))
            p++;
    }
    j->p = p;
    *is_int = integ;
    return 0;
}

/* Consume the literal lit (length n) if it is next. */
static inline bool jp_lit(struct jp *j, const char *lit, size_t n)
{
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return false;
    j->p += n;
    return true;
}

/* Validate and skip one value; depth = containers already open around it. */
static int jp_skip(struct jp *j, unsigned depth)
{
    size_t l;
    unsigned fl;
    bool is_int;
    int rc;

    if (j->p >= j->end)
        return JSON_E_SYNTAX;
    switch (*j->p) {
    case '"':
        j->p++;
        rc = jp_string(j, NULL, 0, &l, &fl);
        return rc ? rc : (fl & JS_BAD_UTF8) ? JSON_E_SYNTAX : 0;
    case '{':
    case '[': {
        const unsigned char close = *j->p == '{' ? '}' : ']';
        if (depth + 1 > JSON_MAX_DEPTH)
            return JSON_E_SYNTAX;
        j->p++;
        jp_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return 0;
        }
        for (;;) {
            if (close == '}') {
                if (j->p >= j->end || *j->p != '"')
                    return JSON_E_SYNTAX;
                j->p++;
                if ((rc = jp_string(j, NULL, 0, &l, &fl)))
                    return rc;
                if (fl & JS_BAD_UTF8)
                    return JSON_E_SYNTAX;
                jp_ws(j);
                if (j->p >= j->end || *j->p != ':')
                    return JSON_E_SYNTAX;
                j->p++;
                jp_ws(j);
            }
            if ((rc = jp_skip(j, depth + 1)))
                return rc;
            jp_ws(j);
            if (j->p >= j->end)
                return JSON_E_SYNTAX;
            if (*j->p == ',') {
                j->p++;
                jp_ws(j);
                continue;
            }
            if (*j->p != close)
                return JSON_E_SYNTAX;
            j->p++;
            return 0;
        }
    }
    case 't':
        return jp_lit(j, LIT("true")) ? 0 : JSON_E_SYNTAX;
    case 'f':
        return jp_lit(j, LIT("false")) ? 0 : JSON_E_SYNTAX;
    case 'n':
        return jp_lit(j, LIT("null")) ? 0 : JSON_E_SYNTAX;
    default:
        return jp_number(j, &is_int);
    }
}

/* Parse the value of a wanted field into f. Only syntax errors are returned. */
static int jp_field(struct jp *j, struct json_field *f)
{
    const unsigned char *start = j->p;
    size_t l;
    unsigned fl;
    bool is_int;
    int rc;

    f->present = true;
    f->err = JSON_OK; /* the last duplicate wins, its error too */
    if (j->p >= j->end)
        return JSON_E_SYNTAX;
    if (f->type == JSON_T_RAW) {
        if ((rc = jp_skip(j, 1)))
            return rc;
        *(const char **)f->out = (const char *)start;
        if (f->len)
            *f->len = (size_t)(j->p - start);
        return 0;
    }
    switch (*j->p) {
    case '"':
        j->p++;
        if (f->type != JSON_T_STRING) {
            rc = jp_string(j, NULL, 0, &l, &fl);
            f->err = JSON_E_TYPE;
            return rc;
        }
        if ((rc = jp_string(j, f->out, f->cap, &l, &fl)))
            return rc;
        if (fl)
            f->err = JSON_E_STRING;
        else if (f->len)
            *f->len = l;
        return 0;
    case 'N':
    case 'I':
    case '-':
        if (f->type == JSON_T_NUMBER &&
            (jp_lit(j, LIT("NaN")) || jp_lit(j, LIT("Infinity")) || jp_lit(j, LIT("-Infinity")))) {
            f->err = JSON_E_NONFINITE;
            return 0;
        }
        if (*j->p != '-')
            return JSON_E_SYNTAX;
        __attribute__((fallthrough)); /* a negative number */
    case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        if ((rc = jp_number(j, &is_int)))
            return rc;
        if (f->type == JSON_T_NUMBER) {
            dec_t v;
            rc = dec_parse((const char *)start, (size_t)(j->p - start), f->max_abs, &v);
            if (rc == 0)
                *(dec_t *)f->out = v;
            else
                f->err = rc == -ERANGE ? JSON_E_RANGE : JSON_E_SYNTAX; /* grammar already checked */
        } else if (f->type == JSON_T_INT && is_int) {
            int64_t v;
            rc = dec_parse_i64((const char *)start, (size_t)(j->p - start), &v);
            if (rc == 0)
                *(int64_t *)f->out = v;
            else
                f->err = rc == -ERANGE ? JSON_E_RANGE : JSON_E_SYNTAX;
        } else {
            f->err = JSON_E_TYPE;
        }
        return f->err == JSON_E_SYNTAX ? JSON_E_SYNTAX : 0;
    case 't':
    case 'f': {
        bool b = *j->p == 't';
        if (!(b ? jp_lit(j, LIT("true")) : jp_lit(j, LIT("false"))))
            return JSON_E_SYNTAX;
        if (f->type == JSON_T_BOOL)
            *(bool *)f->out = b;
        else
            f->err = JSON_E_TYPE;
        return 0;
    }
    default: /* null, objects, arrays; garbage fails in jp_skip */
        if ((rc = jp_skip(j, 1)))
            return rc;
        f->err = JSON_E_TYPE;
        return 0;
    }
}

int json_parse_object(const char *body, size_t len, struct json_field *fields, size_t nfields)
{
    struct jp j = {(const unsigned char *)body, (const unsigned char *)body + len};
    char key[JSON_KEY_MAX];
    int rc;

    for (size_t i = 0; i < nfields; i++) {
        fields[i].present = false;
        fields[i].err = JSON_OK;
    }
    jp_ws(&j);
    if (j.p >= j.end || *j.p != '{')
        return JSON_E_SYNTAX;
    j.p++;
    jp_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
        goto tail;
    }
    for (;;) {
        struct json_field *f = NULL;
        size_t klen;
        unsigned kfl;

        if (j.p >= j.end || *j.p != '"')
            return JSON_E_SYNTAX;
        j.p++;
        if ((rc = jp_string(&j, key, sizeof key, &klen, &kfl)))
            return rc;
        if (kfl & JS_BAD_UTF8)
            return JSON_E_SYNTAX;
        if (!kfl) {
            for (size_t i = 0; i < nfields; i++) {
                /* memcmp, not strncmp: an unescaped key may hold NUL bytes (\u0000) */
                if (strlen(fields[i].key) == klen && memcmp(fields[i].key, key, klen) == 0) {
                    f = &fields[i];
                    break;
                }
            }
        }
        jp_ws(&j);
        if (j.p >= j.end || *j.p != ':')
            return JSON_E_SYNTAX;
        j.p++;
        jp_ws(&j);
        if ((rc = f ? jp_field(&j, f) : jp_skip(&j, 1)))
            return rc;
        jp_ws(&j);
        if (j.p >= j.end)
            return JSON_E_SYNTAX;
        if (*j.p == ',') {
            j.p++;
            jp_ws(&j);
            continue;
        }
        if (*j.p != '}')
            return JSON_E_SYNTAX;
        j.p++;
        break;
    }
tail:
    jp_ws(&j);
    return j.p == j.end ? JSON_OK : JSON_E_SYNTAX;
}

int json_parse_event(const char *body, size_t len, struct json_event *ev)
{
    struct json_field f[2] = {
        {.key = "userId", .type = JSON_T_STRING, .out = ev->user, .cap = JSON_USER_MAX,
         .len = &ev->user_len},
        {.key = "value", .type = JSON_T_NUMBER, .out = &ev->value,
         .max_abs = JSON_EVENT_VALUE_MAX},
    };

    if (json_parse_object(body, len, f, 2) != JSON_OK)
        return JSON_EV_INVALID_JSON;
    if (!f[0].present || f[0].err != JSON_OK || ev->user_len == 0)
        return JSON_EV_INVALID_USER_ID;
    if (!f[1].present)
        ev->value = 0;
    else if (f[1].err != JSON_OK)
        return JSON_EV_INVALID_VALUE;
    return JSON_EV_OK;
}

ssize_t json_escape(char *dst, size_t cap, const char *src, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)src, *end = p + n;
    size_t o = 0;

    while (p < end) {
        const unsigned char *run = p;
        p = plain_run(p, end);
        if (p != run) {
            size_t k = (size_t)(p - run);
            if (cap - o < k)
                return -ENOSPC;
            memcpy(dst + o, run, k);
            o += k;
        }
        if (p >= end)
            break;
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            if (cap - o < 2)
                return -ENOSPC;
            dst[o++] = '\\';
            dst[o++] = (char)c;
            p++;
        } else if (c < 0x20) {
            if (cap - o < 6)
                return -ENOSPC;
            memcpy(dst + o, LIT("\\u00"));
            dst[o + 4] = hex[c >> 4];
            dst[o + 5] = hex[c & 15];
            o += 6;
            p++;
        } else {
            size_t k = utf8_seq(p, (size_t)(end - p));
            if (k == 0) {
                if (cap - o < 6)
                    return -ENOSPC;
                memcpy(dst + o, LIT("\\ufffd"));
                o += 6;
                p++;
            } else {
                if (cap - o < k)
                    return -ENOSPC;
                memcpy(dst + o, p, k);
                o += k;
                p += k;
            }
        }
    }
    return (ssize_t)o;
}

/* ---------------------------------------------------------------- writer */

void json_w_init(struct json_w *w, char *buf, size_t cap)
{
    *w = (struct json_w){.p = buf, .len = 0, .cap = cap, .full = cap == 0};
}

/* Room for n more bytes, keeping one for the NUL; false (and full) if there is none. */
static bool jw_room(struct json_w *w, size_t n)
{
    if (w->full || n >= w->cap - w->len)
        w->full = true;
    return !w->full;
}

void json_w_raw(struct json_w *w, const char *s, size_t n)
{
    if (!jw_room(w, n))
        return;
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

void json_w_str(struct json_w *w, const char *s, size_t n)
{
    if (!jw_room(w, 2))
        return;
    /* the escaped text lands between the quotes; cap - len - 3 keeps the NUL and the quote */
    ssize_t e = json_escape(w->p + w->len + 1, w->cap - w->len - 3, s, n);
    if (e < 0) {
        w->full = true;
        return;
    }
    w->p[w->len] = '"';
    w->p[w->len + 1 + (size_t)e] = '"';
    w->len += (size_t)e + 2;
}

void json_w_u64(struct json_w *w, uint64_t v)
{
    char t[20];
    json_w_raw(w, t, fmt_u64(t, v));
}

void json_w_i64(struct json_w *w, int64_t v)
{
    char t[20];
    json_w_raw(w, t, fmt_i64(t, v));
}

void json_w_i128(struct json_w *w, __int128 v)
{
    char t[40]; /* "-" + 39 digits */
    json_w_raw(w, t, fmt_i128(t, v));
}

void json_w_dec(struct json_w *w, dec_t v)
{
    char t[DEC_FMT_MAX];
    json_w_raw(w, t, dec_format(v, t));
}

ssize_t json_w_end(struct json_w *w)
{
    if (w->full)
        return -ENOSPC;
    w->p[w->len] = '\0';
    return (ssize_t)w->len;
}
