/* uuid — see uuid.h. */
#include "uuid.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

void uuid_gen_init(struct uuid_gen *g)
{
    g->pos = UUID_POOL;
}

static int refill(struct uuid_gen *g)
{
    size_t got = 0;
    while (got < UUID_POOL) {
        ssize_t r = getrandom(g->pool + got, UUID_POOL - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)r;
    }
    g->pos = 0;
    return 0;
}

int uuid_v4(struct uuid_gen *g, uint8_t out[16])
{
    if (g->pos > UUID_POOL - 16) {
        int rc = refill(g);
        if (rc < 0)
            return rc;
    }
    memcpy(out, g->pool + g->pos, 16);
    /* the pool bytes are used once: wipe them so a later memory dump cannot predict ids */
    memset(g->pool + g->pos, 0, 16);
    g->pos += 16;
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x40); /* version 4 */
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80); /* variant 10xx */
    return 0;
}

void uuid_format(const uint8_t u[16], char *out)
{
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[u[i] >> 4];
        *p++ = hex[u[i] & 15];
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int uuid_parse(const char *s, size_t n, uint8_t out[16])
{
    if (n != UUID_TEXT_LEN)
        return -EINVAL;
    int k = 0;
    for (size_t i = 0; i < n;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return -EINVAL;
            i++;
            continue;
        }
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0 || i + 1 == 8 || i + 1 == 13 || i + 1 == 18 || i + 1 == 23)
            return -EINVAL;
        out[k++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return 0;
}
