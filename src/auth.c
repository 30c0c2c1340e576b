/* auth — see auth.h. */
#include "auth.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "lit.h"
#include "live.h"
#include "metrics.h"
#include "tnkeys.h"

/* Constant-time comparison: the time depends on the configured key's length only. */
static bool key_equal(const struct live *L, const char *given, size_t n)
{
    unsigned char diff = (unsigned char)(n != L->admin_key_len);
    for (size_t i = 0; i < L->admin_key_len; i++)
        diff |= (unsigned char)(L->admin_key[i] ^ (i < n ? given[i] : 0));
    return diff == 0;
}

/* The key req carries (X-API-Key, else Authorization: Bearer), or NULL. */
static const char *presented(const struct http_req *req, size_t *klen)
{
    const struct http_hdr *h = http_header(req, LIT("x-api-key"));
    if (h) {
        *klen = h->value_len;
        return h->value;
    }
    if ((h = http_header(req, LIT("authorization"))) && h->value_len > LIT_LEN("Bearer ") &&
        strncasecmp(h->value, LIT("Bearer ")) == 0) {
        *klen = h->value_len - LIT_LEN("Bearer ");
        return h->value + LIT_LEN("Bearer ");
    }
    return NULL;
}

int auth_admin(struct sess *s, const struct http_req *req)
{
    const struct live *L = live_get(s->env->live);
    if (!L || !L->admin_key_len) {
        sess_error(s, HTTP_E_ADMIN_DISABLED, "no admin key is configured on this server", NULL, 0);
        return -EACCES;
    }
    size_t klen = 0;
    const char *key = presented(req, &klen);
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

int auth_tenant(struct sess *s, const struct http_req *req, const struct tnk_store *keys,
                const uint8_t *tid, unsigned scope)
{
    const struct live *L = live_get(s->env->live);
    size_t klen = 0;
    const char *key = presented(req, &klen);
    if (!key || !tnk_is_key(key, klen) || (L && L->admin_key_len && key_equal(L, key, klen)))
        return auth_admin(s, req);
    enum tnk_result r = tnk_check(keys, key, klen, tid, scope,
                                  (int64_t)clock_ms(CLOCK_REALTIME_COARSE), NULL);
    if (r == TNK_OK)
        return 0;
    metrics_tenant_key_failure(r);
    static const char *const why[TNK__COUNT] = {
        [TNK_UNKNOWN] = "unknown tenant key",
        [TNK_BAD_SECRET] = "wrong tenant key secret",
        [TNK_EXPIRED] = "this tenant key has expired",
        [TNK_REVOKED] = "this tenant key was revoked",
        [TNK_WRONG_TENANT] = "this tenant key is not valid for this resource",
        [TNK_SCOPE] = "this tenant key lacks the scope this route needs",
    };
    if (r == TNK_WRONG_TENANT || r == TNK_SCOPE)
        sess_error(s, HTTP_E_FORBIDDEN, why[r], NULL, 0);
    else
        sess_error(s, HTTP_E_UNAUTHORIZED, why[r],
                   SESS_HDRS("WWW-Authenticate: Bearer error=\"invalid_token\"\r\n"));
    return -EACCES;
}
