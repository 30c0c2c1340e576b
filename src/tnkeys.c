/* tnkeys — see tnkeys.h. */
#include "tnkeys.h"

#include <ck_pr.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "fmt.h"
#include "json.h"
#include "lit.h"
#include "mix.h"
#include "uuid.h"

#define CHUNK 1024u

struct tnk_store {
    pthread_mutex_t mu;
    uint32_t cap, nchunks;
    uint32_t n;             /* records published (release store after the index slot) */
    uint32_t mask;          /* index size - 1 */
    uint32_t *index;        /* record idx + 1; 0 = empty; written once */
    struct tnk_key **chunks; /* nchunks pointers, each set once (release store) */
    uint64_t seed;
};

static const char *const scope_names[] = {"counter:read",   "counter:create", "counter:set",
                                          "counter:delete", "counter:history", "keys:manage"};
static const char *const result_names[TNK__COUNT] = {"ok",      "unknown", "bad_secret", "expired",
                                                     "revoked", "wrong_tenant", "scope"};

struct tnk_store *tnk_new(uint32_t capacity, uint64_t seed)
{
    if (!capacity || capacity > (1u << 30))
        return NULL;
    struct tnk_store *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    uint32_t size = 2;
    while (size < 2 * (uint64_t)capacity)
        size *= 2;
    st->cap = capacity;
    st->nchunks = (capacity + CHUNK - 1) / CHUNK;
    st->mask = size - 1;
    st->seed = seed;
    st->index = calloc(size, sizeof(*st->index));
    st->chunks = calloc(st->nchunks, sizeof(*st->chunks));
    if (!st->index || !st->chunks) {
        tnk_free(st);
        return NULL;
    }
    pthread_mutex_init(&st->mu, NULL);
    return st;
}

void tnk_free(struct tnk_store *st)
{
    if (!st)
        return;
    if (st->chunks)
        for (uint32_t i = 0; i < st->nchunks; i++)
            free(st->chunks[i]);
    free(st->chunks);
    free(st->index);
    if (st->index && st->chunks)
        pthread_mutex_destroy(&st->mu);
    free(st);
}

unsigned tnk_scope_bit(const char *name, size_t n)
{
    for (unsigned i = 0; i < sizeof(scope_names) / sizeof(scope_names[0]); i++)
        if (strlen(scope_names[i]) == n && memcmp(scope_names[i], name, n) == 0)
            return 1u << i;
    return 0;
}

const char *tnk_scope_name(unsigned b)
{
    for (unsigned i = 0; i < sizeof(scope_names) / sizeof(scope_names[0]); i++)
        if (b == 1u << i)
            return scope_names[i];
    return NULL;
}

const char *tnk_result_name(enum tnk_result r)
{
    return (unsigned)r < TNK__COUNT ? result_names[r] : "unknown";
}

static uint32_t slot_of(const struct tnk_store *st, const uint8_t id[16])
{
    uint64_t a, b;
    memcpy(&a, id, 8);
    memcpy(&b, id + 8, 8);
    return (uint32_t)mix64(a ^ mix64(b ^ st->seed)) & st->mask;
}

static struct tnk_key *rec_at(const struct tnk_store *st, uint32_t idx)
{
    struct tnk_key *c = ck_pr_load_ptr(&st->chunks[idx / CHUNK]);
    return &c[idx % CHUNK];
}

const struct tnk_key *tnk_find(const struct tnk_store *st, const uint8_t id[16])
{
    for (uint32_t s = slot_of(st, id);; s = (s + 1) & st->mask) {
        uint32_t v = ck_pr_load_32(&st->index[s]);
        if (!v)
            return NULL;
        ck_pr_fence_load(); /* the record was complete before its slot was published */
        const struct tnk_key *k = rec_at(st, v - 1);
        if (memcmp(k->id, id, 16) == 0)
            return k;
    }
}

/* base64url alphabet (RFC 4648 §5) */
static const char b64u[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void b64url(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        for (int k = 3; k >= 0; k--)
            out[o++] = b64u[v >> (6 * k) & 63];
    }
    if (n - i == 2) { /* 32 bytes: 10 groups and 2 bytes left, 3 characters */
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64u[v >> 18 & 63];
        out[o++] = b64u[v >> 12 & 63];
        out[o++] = b64u[v >> 6 & 63];
    } else if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64u[v >> 18 & 63];
        out[o++] = b64u[v >> 12 & 63];
    }
}

static int random_bytes(uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)r;
    }
    return 0;
}

int tnk_mint(uint8_t id[16], char text[TNK_TEXT_LEN + 1], uint8_t verifier[SHA256_LEN])
{
    uint8_t raw[16 + 32];
    int rc = random_bytes(raw, sizeof(raw));
    if (rc < 0)
        return rc;
    memcpy(id, raw, 16);
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x40); /* version 4: the database column is a uuid */
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80);
    static const char hx[] = "0123456789abcdef";
    memcpy(text, "rck_", 4);
    for (int i = 0; i < 16; i++) {
        text[4 + 2 * i] = hx[id[i] >> 4];
        text[5 + 2 * i] = hx[id[i] & 15];
    }
    text[36] = '.';
    b64url(raw + 16, 32, text + 37);
    text[TNK_TEXT_LEN] = 0;
    sha256(text + 37, TNK_SECRET_TEXT_LEN, verifier);
    memset(raw, 0, sizeof(raw));
    return 0;
}

int tnk_insert(struct tnk_store *st, const uint8_t id[16], const uint8_t tenant[16],
               const uint8_t verifier[SHA256_LEN], uint32_t scopes, int64_t expires_ms,
               int64_t created_ms, bool deleted, const struct tnk_key **out)
{
    if (scopes & ~TNK_SCOPES_ALL)
        return -EINVAL;
    int rc = 0;
    pthread_mutex_lock(&st->mu);
    uint32_t s = slot_of(st, id);
    for (;; s = (s + 1) & st->mask) {
        uint32_t v = st->index[s];
        if (!v)
            break;
        const struct tnk_key *k = rec_at(st, v - 1);
        if (memcmp(k->id, id, 16) == 0) {
            if (out)
                *out = k;
            rc = -EEXIST;
            goto out;
        }
    }
    uint32_t idx = st->n;
    if (idx == st->cap) {
        rc = -ENOSPC;
        goto out;
    }
    if (!st->chunks[idx / CHUNK]) {
        struct tnk_key *c = calloc(CHUNK, sizeof(*c));
        if (!c) {
            rc = -ENOMEM;
            goto out;
        }
        ck_pr_store_ptr(&st->chunks[idx / CHUNK], c);
    }
    struct tnk_key *k = &st->chunks[idx / CHUNK][idx % CHUNK];
    memcpy(k->id, id, 16);
    memcpy(k->tenant, tenant, 16);
    memcpy(k->verifier, verifier, SHA256_LEN);
    k->scopes = scopes;
    k->expires_ms = expires_ms;
    k->created_ms = created_ms;
    k->deleted = deleted;
    ck_pr_fence_store(); /* the record is complete before a reader can reach it */
    ck_pr_store_32(&st->index[s], idx + 1);
    ck_pr_store_32(&st->n, idx + 1);
    if (out)
        *out = k;
out:
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int tnk_delete(struct tnk_store *st, const struct tnk_key *k)
{
    pthread_mutex_lock(&st->mu);
    int rc = k->deleted ? -ENOENT : 0;
    ck_pr_fence_store();
    ck_pr_store_32(&((struct tnk_key *)k)->deleted, 1);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

unsigned tnk_delete_tenant(struct tnk_store *st, const uint8_t tenant[16])
{
    unsigned n = 0;
    pthread_mutex_lock(&st->mu);
    for (uint32_t i = 0; i < st->n; i++) {
        struct tnk_key *k = rec_at(st, i);
        if (!k->deleted && memcmp(k->tenant, tenant, 16) == 0) {
            ck_pr_store_32(&k->deleted, 1);
            n++;
        }
    }
    pthread_mutex_unlock(&st->mu);
    return n;
}

bool tnk_deleted(const struct tnk_key *k)
{
    uint32_t d = ck_pr_load_32(&k->deleted);
    ck_pr_fence_load();
    return d != 0;
}

bool tnk_is_key(const char *text, size_t n)
{
    return n >= 4 && memcmp(text, "rck_", 4) == 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The key id of a well-formed key text: 0, or -EINVAL. */
static int parse_text(const char *text, size_t n, uint8_t id[16])
{
    if (n != TNK_TEXT_LEN || !tnk_is_key(text, n) || text[36] != '.')
        return -EINVAL;
    for (int i = 0; i < 16; i++) {
        int hi = hexval(text[4 + 2 * i]), lo = hexval(text[5 + 2 * i]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        id[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

enum tnk_result tnk_check(const struct tnk_store *st, const char *text, size_t n,
                          const uint8_t *tenant, unsigned scope, int64_t now_ms,
                          const struct tnk_key **out)
{
    uint8_t id[16];
    const struct tnk_key *k;
    if (!st || parse_text(text, n, id) < 0 || !(k = tnk_find(st, id)))
        return TNK_UNKNOWN;
    uint8_t d[SHA256_LEN];
    sha256(text + 37, TNK_SECRET_TEXT_LEN, d);
    unsigned char diff = 0; /* constant time: every byte is compared */
    for (int i = 0; i < SHA256_LEN; i++)
        diff |= (unsigned char)(d[i] ^ k->verifier[i]);
    if (diff)
        return TNK_BAD_SECRET;
    if (tnk_deleted(k))
        return TNK_REVOKED;
    if (k->expires_ms && now_ms >= k->expires_ms)
        return TNK_EXPIRED;
    if (!tenant || memcmp(tenant, k->tenant, 16) != 0)
        return TNK_WRONG_TENANT;
    if ((k->scopes & scope) != scope)
        return TNK_SCOPE;
    if (out)
        *out = k;
    return TNK_OK;
}

unsigned tnk_list(const struct tnk_store *st, const uint8_t tenant[16], const struct tnk_key **out,
                  unsigned cap)
{
    unsigned c = 0;
    uint32_t n = ck_pr_load_32(&st->n);
    ck_pr_fence_load();
    for (uint32_t i = 0; i < n && c < cap; i++) {
        const struct tnk_key *k = rec_at(st, i);
        if (!tnk_deleted(k) && memcmp(k->tenant, tenant, 16) == 0)
            out[c++] = k;
    }
    return c;
}

uint32_t tnk_count(const struct tnk_store *st)
{
    return ck_pr_load_32(&st->n);
}

/* digits [s, s+n) as a number, or -1 */
static int num(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int tnk_parse_time(const char *s, size_t n, int64_t *ms)
{
    /* YYYY-MM-DDTHH:MM:SS: 19 bytes, then [.frac] and Z or ±HH:MM */
    if (n < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
        s[16] != ':')
        return -EINVAL;
    int y = num(s, 4), mo = num(s + 5, 2), d = num(s + 8, 2), h = num(s + 11, 2),
        mi = num(s + 14, 2), se = num(s + 17, 2);
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h < 0 || h > 23 || mi < 0 ||
        mi > 59 || se < 0 || se > 60)
        return -EINVAL;
    if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return -EINVAL;
    size_t i = 19;
    int64_t frac = 0;
    if (s[i] == '.') {
        size_t start = ++i;
        for (int scale = 100; i < n && s[i] >= '0' && s[i] <= '9'; i++, scale /= 10)
            frac += scale ? (s[i] - '0') * scale : 0;
        if (i == start)
            return -EINVAL;
    }
    int64_t off = 0;
    if (i < n && (s[i] == 'Z' || s[i] == 'z') && i + 1 == n) {
        off = 0;
    } else if (i + 6 == n && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh = num(s + i + 1, 2), om = num(s + i + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59)
            return -EINVAL;
        off = (s[i] == '+' ? 1 : -1) * (int64_t)(oh * 60 + om) * 60000;
    } else {
        return -EINVAL;
    }
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + (se == 60 ? 59 : se);
    *ms = secs * 1000 + frac - off;
    return 0;
}

size_t tnk_json(const struct tnk_key *k, bool with_tenant, const char *text, char *out)
{
    struct json_w w;
    char id[UUID_TEXT_LEN], ts[32];
    json_w_init(&w, out, TNK_JSON_MAX);
    json_w_lit(&w, "{\"key_id\":");
    uuid_format(k->id, id);
    json_w_str(&w, id, sizeof(id));
    if (with_tenant) {
        json_w_lit(&w, ",\"tenant_id\":");
        uuid_format(k->tenant, id);
        json_w_str(&w, id, sizeof(id));
    }
    if (text) {
        json_w_lit(&w, ",\"key\":");
        json_w_str(&w, text, strlen(text));
    }
    json_w_lit(&w, ",\"scopes\":[");
    bool first = true;
    for (unsigned b = 1; b <= TNK_KEYS_MANAGE; b <<= 1) {
        if (!(k->scopes & b))
            continue;
        if (!first)
            json_w_lit(&w, ",");
        first = false;
        json_w_str(&w, tnk_scope_name(b), strlen(tnk_scope_name(b)));
    }
    json_w_lit(&w, "],\"expires_at\":");
    if (k->expires_ms) {
        json_w_str(&w, ts, fmt_time_ms(ts, k->expires_ms));
    } else {
        json_w_lit(&w, "null");
    }
    json_w_lit(&w, ",\"created_at\":");
    json_w_str(&w, ts, fmt_time_ms(ts, k->created_ms));
    json_w_lit(&w, "}");
    ssize_t len = json_w_end(&w);
    return len < 0 ? 0 : (size_t)len;
}
