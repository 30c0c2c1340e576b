/* conninfo — see conninfo.h. */
#include "conninfo.h"

#include <ctype.h>
#include <errno.h>
#include <postgresql/libpq-fe.h> /* no -I/usr/include/postgresql in the Makefile */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "lit.h"

int conninfo_check(const char *v, char *why, size_t wcap)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(v, &errmsg);

    if (opts) {
        PQconninfoFree(opts);
        return 0;
    }
    size_t n = errmsg ? strlen(errmsg) : 0;
    while (n > 0 && (errmsg[n - 1] == '\n' || errmsg[n - 1] == '\r'))
        n--;
    snprintf(why, wcap, "not a libpq conninfo string or URI: %.*s", (int)n,
             errmsg ? errmsg : "out of memory");
    PQfreemem(errmsg);
    return -EINVAL;
}

/* The masked copy being written: out[0..o), one byte always kept for the NUL. */
struct mask {
    char *out;
    size_t o, cap;
    bool full;
};

static void emit(struct mask *m, const char *s, size_t len)
{
    if (m->full || len >= m->cap - m->o) {
        m->full = true;
        return;
    }
    memcpy(m->out + m->o, s, len);
    m->o += len;
}

static bool secret_key(const char *k, size_t kl)
{
    return (kl == LIT_LEN("password") && memcmp(k, LIT("password")) == 0) ||
           (kl == LIT_LEN("sslpassword") && memcmp(k, LIT("sslpassword")) == 0);
}

/* postgresql://user:secret@host/db?k=v&password=secret */
static void mask_uri(struct mask *m, const char *in, size_t n)
{
    /* libpq: the userinfo is everything before an '@' that precedes the first '/'. */
    size_t start = (size_t)(strstr(in, "://") - in) + 3, i = start, at = start;
    while (at < n && in[at] != '@' && in[at] != '/')
        at++;
    emit(m, in, start);
    if (at < n && in[at] == '@') {
        const char *colon = memchr(in + start, ':', at - start);
        if (colon) {
            emit(m, in + start, (size_t)(colon - in) + 1 - start);
            emit(m, LIT("***"));
            i = at;
        }
    }
    /* Query parameters: ?k=v&k=v */
    const char *q = strchr(in + i, '?');
    size_t qs = q ? (size_t)(q - in) + 1 : n;
    emit(m, in + i, qs - i);
    for (i = qs; i < n;) {
        size_t end = i;
        while (end < n && in[end] != '&')
            end++;
        const char *eq = memchr(in + i, '=', end - i);
        size_t kl = eq ? (size_t)(eq - (in + i)) : 0;
        if (eq && secret_key(in + i, kl)) {
            emit(m, in + i, kl + 1);
            emit(m, LIT("***"));
        } else {
            emit(m, in + i, end - i);
        }
        i = end;
        if (i < n) {
            emit(m, LIT("&"));
            i++;
        }
    }
}

static size_t skip_space(const char *in, size_t i, size_t n)
{
    while (i < n && isspace((unsigned char)in[i]))
        i++;
    return i;
}

/* key = value pairs; values unquoted (backslash escapes) or '...' quoted. */
static void mask_pairs(struct mask *m, const char *in, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t ws = i;
        i = skip_space(in, i, n);
        emit(m, in + ws, i - ws);
        if (i >= n)
            break;
        size_t ks = i;
        while (i < n && in[i] != '=' && !isspace((unsigned char)in[i]))
            i++;
        size_t ke = i;
        i = skip_space(in, i, n);
        if (i >= n || in[i] != '=' || ke == ks)
            goto garbled;
        i = skip_space(in, i + 1, n);
        size_t vs = i;
        if (i < n && in[i] == '\'') {
            for (i++; i < n && in[i] != '\''; i++)
                if (in[i] == '\\' && i + 1 < n)
                    i++;
            if (i >= n)
                goto garbled; /* unterminated quote */
            i++;
        } else {
            for (; i < n && !isspace((unsigned char)in[i]); i++)
                if (in[i] == '\\' && i + 1 < n)
                    i++;
        }
        emit(m, in + ks, vs - ks);
        if (secret_key(in + ks, ke - ks))
            emit(m, LIT("***"));
        else
            emit(m, in + vs, i - vs);
    }
    return;
garbled:
    /* Cannot tell keys from values any more: hide the rest rather than risk a password. */
    emit(m, LIT("***"));
}

int conninfo_mask(const char *in, char *out, size_t cap)
{
    struct mask m = {.out = out, .o = 0, .cap = cap, .full = cap == 0};
    size_t n = strlen(in);
    if (m.full)
        return -ENOSPC;
    if (strncmp(in, LIT("postgresql://")) == 0 || strncmp(in, LIT("postgres://")) == 0)
        mask_uri(&m, in, n);
    else
        mask_pairs(&m, in, n);
    if (m.full)
        return -ENOSPC;
    out[m.o] = '\0';
    return (int)m.o;
}
