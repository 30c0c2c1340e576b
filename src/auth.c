/* auth — see auth.h. */
#include "auth.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "lit.h"
#include "live.h"

/* Constant-time comparison: the time depends on the configured key's length only. */
static bool key_equal(const struct live *L, const char *given, size_t n)
{
    unsigned char diff = (unsigned char)(n != L->admin_key_len);
    for (size_t i = 0; i < L->admin_key_len; i++)
        diff |= (unsigned char)(L->admin_key[i] ^ (i < n ? given[i] : 0));
    return diff == 0;
}

int auth_admin(struct sess *s, const struct http_req *req)
{
    const struct live *L = live_get(s->env->live);
    if (!L || !L->admin_key_len) {
        sess_error(s, HTTP_E_ADMIN_DISABLED, "no admin key is configured on this server", NULL, 0);
        return -EACCES;
    }
    const struct http_hdr *h = http_header(req, LIT("x-api-key"));
    const char *key = NULL;
    size_t klen = 0;
    if (h) {
        key = h->value;
        klen = h->value_len;
    } else if ((h = http_header(req, LIT("authorization"))) &&
               h->value_len > LIT_LEN("Bearer ") && strncasecmp(h->value, LIT("Bearer ")) == 0) {
        key = h->value + LIT_LEN("Bearer ");
        klen = h->value_len - LIT_LEN("Bearer ");
    }
    if (!key) {
        sess_error(s, HTTP_E_UNAUTHORIZED, "admin key required (X-API-Key or Bearer)",
                   SESS_HDRS("WWW-Authenticate: Bearer\r\n"));
        return -EACCES;
    }
    if (!key_equal(L, key, klen)) {
        sess_error(s, HTTP_E_FORBIDDEN, "wrong admin key", NULL, 0);
        return -EACCES;
    }
    return 0;
}
