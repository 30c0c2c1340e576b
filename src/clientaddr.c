/* clientaddr — see clientaddr.h. */
#include "clientaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* Longest address text we parse: a full IPv6 with an IPv4 tail is 45 bytes. */
#define ADDR_TEXT_MAX 64

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address: a dual-stack listener
   reports IPv4 peers that way, and proxies write either form. */
static void normalize(uint8_t *family, uint8_t a[16])
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (*family == AF_INET6 && memcmp(a, mapped, 12) == 0) {
        memmove(a, a + 12, 4);
        memset(a + 4, 0, 12);
        *family = AF_INET;
    }
}

/* Parse one address s[0..n): "a.b.c.d", "a.b.c.d:port", "v6", "[v6]" or "[v6]:port".
   true and *family/out on success. */
static bool parse_addr(const char *s, size_t n, uint8_t *family, uint8_t out[16])
{
    while (n && is_space(*s))
        s++, n--;
    while (n && is_space(s[n - 1]))
        n--;
    char buf[ADDR_TEXT_MAX];
    if (n == 0 || n >= sizeof(buf))
        return false;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return false;
        size_t rest = n - (size_t)(close - s) - 1;
        if (rest && close[1] != ':')
            return false;
        n = (size_t)(close - s) - 1;
        s++;
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon && !memchr(colon + 1, ':', n - (size_t)(colon - s) - 1))
            n = (size_t)(colon - s); /* a.b.c.d:port (one colon: not IPv6) */
    }
    memcpy(buf, s, n);
    buf[n] = 0;
    memset(out, 0, 16);
    if (inet_pton(AF_INET, buf, out) == 1)
        *family = AF_INET;
    else if (inet_pton(AF_INET6, buf, out) == 1)
        *family = AF_INET6;
    else
        return false;
    normalize(family, out);
    return true;
}

int ca_parse_nets(const char *s, struct ca_net *out, size_t cap, size_t *n, char *err,
                  size_t errcap)
{
    *n = 0;
    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *slash = memchr(s, '/', len);
        struct ca_net net = {0};
        size_t alen = slash ? (size_t)(slash - s) : len;
        if (!parse_addr(s, alen, &net.family, net.addr)) {
            snprintf(err, errcap, "'%.*s' is not an IPv4 or IPv6 address", (int)alen, s);
            return -EINVAL;
        }
        unsigned max = net.family == AF_INET ? 32 : 128, bits = max;
        if (slash) {
            bits = 0;
            size_t digits = 0;
            for (const char *p = slash + 1; p < s + len && !is_space(*p); p++, digits++) {
                if (*p < '0' || *p > '9' || bits > 128) {
                    digits = 0;
                    break;
                }
                bits = bits * 10 + (unsigned)(*p - '0');
            }
            if (!digits || bits > max) {
                snprintf(err, errcap, "'%.*s': the prefix must be 0..%u", (int)len, s, max);
                return -EINVAL;
            }
        }
        if (*n == cap) {
            snprintf(err, errcap, "more than %zu networks", cap);
            return -ENOSPC;
        }
        net.bits = (uint8_t)bits;
        out[(*n)++] = net;
        s = end ? end + 1 : s + len;
    }
    return 0;
}

bool ca_trusted(const struct ca_net *nets, size_t n, uint8_t family, const uint8_t addr[16])
{
    for (size_t i = 0; i < n; i++) {
        const struct ca_net *t = &nets[i];
        if (t->family != family)
            continue;
        unsigned full = t->bits / 8u, rem = t->bits % 8u;
        if (memcmp(t->addr, addr, full) != 0)
            continue;
        if (rem && ((t->addr[full] ^ addr[full]) & (uint8_t)(0xff << (8 - rem))))
            continue;
        return true;
    }
    return false;
}

/* The value of the for= parameter in one Forwarded element e[0..n) (quotes removed), or
   NULL. */
static const char *forwarded_for(const char *e, size_t n, size_t *vlen)
{
    const char *p = e, *end = e + n;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pe = semi ? semi : end;
        while (p < pe && is_space(*p))
            p++;
        if (pe - p > 4 && strncasecmp(p, "for=", 4) == 0) {
            const char *v = p + 4;
            size_t l = (size_t)(pe - v);
            while (l && is_space(v[l - 1]))
                l--;
            if (l >= 2 && v[0] == '"' && v[l - 1] == '"')
                v++, l -= 2;
            *vlen = l;
            return v;
        }
        p = semi ? semi + 1 : end;
    }
    return NULL;
}

bool ca_client(const struct ca_net *nets, size_t n, uint8_t peer_family, const uint8_t peer[16],
               const char *xff, size_t xff_len, const char *fwd, size_t fwd_len, uint8_t *family,
               uint8_t out[16])
{
    uint8_t pf = peer_family, pa[16];
    memcpy(pa, peer, 16);
    normalize(&pf, pa);
    *family = pf;
    memcpy(out, pa, 16);
    if (!n || !ca_trusted(nets, n, pf, pa))
        return false;
    bool use_xff = xff && xff_len;
    const char *h = use_xff ? xff : fwd;
    size_t hl = use_xff ? xff_len : fwd_len;
    if (!h || !hl)
        return false;
    uint8_t f = 0, a[16];
    bool any = false;
    /* right to left over the comma-separated items */
    for (size_t end = hl; end > 0;) {
        size_t start = end;
        while (start > 0 && h[start - 1] != ',')
            start--;
        const char *v = h + start;
        size_t vl = end - start;
        if (!use_xff && !(v = forwarded_for(h + start, end - start, &vl)))
            return false; /* an element without for=: malformed for our purpose */
        if (!parse_addr(v, vl, &f, a))
            return false; /* malformed (or an obfuscated "for=_hidden"): the peer */
        any = true;
        if (!ca_trusted(nets, n, f, a))
            break;
        end = start ? start - 1 : 0;
    }
    if (!any)
        return false;
    /* the first untrusted one from the right, or (every hop trusted) the leftmost */
    *family = f;
    memcpy(out, a, 16);
    return true;
}
