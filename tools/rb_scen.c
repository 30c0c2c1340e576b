/* rb_scen — see rb_scen.h. */
#include "rb_scen.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "rb_client.h"

#define STATS_BODY_MAX 65536 /* /stats is ~400 bytes; room for a verbose "server" object */
#define CTL_TIMEOUT_MS 5000  /* set-up and verification requests */

/* ---- requests ---------------------------------------------------------------------------- */

/* "METHOD path HTTP/1.1\r\nHost: ..\r\n" + -H headers + extra; returns a malloc'd string. */
static char *build_head(const struct rb_opts *o, const char *method, const char *path,
                        const char *extra)
{
    size_t cap = strlen(method) + strlen(path) + strlen(o->url.authority) + o->headers_len +
                 strlen(extra) + 64;
    char *s = malloc(cap);
    if (!s) return NULL;
    int n = snprintf(s, cap, "%s %s HTTP/1.1\r\n", method, path);
    if (!o->has_host) n += snprintf(s + n, cap - (size_t)n, "Host: %s\r\n", o->url.authority);
    if (o->headers_len) n += snprintf(s + n, cap - (size_t)n, "%s", o->headers);
    snprintf(s + n, cap - (size_t)n, "%s", extra);
    return s;
}

/* path with its {n} (rb_args checked there is one) as 12 placeholder digits into out (room
   for strlen(path) + 10); sets *at to where the digits start in it. */
static const char *spread_path(const char *path, char *out, size_t cap, size_t *at)
{
    const char *ph = strstr(path, "{n}");
    *at = (size_t)(ph - path);
    snprintf(out, cap, "%.*s000000000000%s", (int)*at, path, ph + 3);
    return out;
}

/* The load request of o's scenario to path into r. 0, -ENOMEM, or -E2BIG (over 1 MiB). */
static int make_request(const struct rb_opts *o, const char *path, struct rb_req *r)
{
    char extra[128], sp[sizeof(o->url.path) + 16];
    size_t at = 0;
    if (o->spread) path = spread_path(path, sp, sizeof(sp), &at);
    if (o->scen == RB_EVENT) {
        r->bytes = build_head(o, "POST", path,
                              o->has_ctype ? "Content-Length: "
                                           : "Content-Type: application/json\r\nContent-Length: ");
        if (!r->bytes) return -ENOMEM;
        r->len = strlen(r->bytes);
        /* + length (<= 2 digits) + CRLFCRLF + body (27 + 5 + 3 + 2 bytes) */
        r->max = (uint32_t)r->len + 2 + 4 + 37;
        return 0;
    }
    const char *method = o->scen == RB_RAW ? o->method : "POST";
    const char *body = o->scen == RB_RAW ? o->body : NULL;
    size_t blen = body ? strlen(body) : 0;
    bool want_len = body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                    strcmp(method, "PATCH") == 0;
    /* a JSON-looking body gets the JSON content type, as event.lua sends */
    bool json = body && (body[0] == '{' || body[0] == '[') && !o->has_ctype;
    int n = 0;
    extra[0] = '\0';
    if (json)
        n += snprintf(extra + n, sizeof(extra) - (size_t)n, "Content-Type: application/json\r\n");
    if (want_len)
        n += snprintf(extra + n, sizeof(extra) - (size_t)n, "Content-Length: %zu\r\n", blen);
    snprintf(extra + n, sizeof(extra) - (size_t)n, "\r\n");
    char *head = build_head(o, method, path, extra);
    if (!head) return -ENOMEM;
    size_t hl = strlen(head);
    r->bytes = malloc(hl + blen + 1);
    if (!r->bytes) {
        free(head);
        return -ENOMEM;
    }
    memcpy(r->bytes, head, hl);
    if (blen) memcpy(r->bytes + hl, body, blen);
    r->len = hl + blen;
    r->bytes[r->len] = '\0';
    r->max = (uint32_t)r->len;
    r->head_method = strcmp(method, "HEAD") == 0;
    if (o->spread) r->spread_at = strlen(method) + 1 + at; /* "METHOD path" */
    free(head);
    if (r->len > (1u << 20)) return -E2BIG;
    return 0;
}

/* ---- control requests (main thread) ----------------------------------------------------- */

static int ctl(const struct rb_opts *o, const char *method, const char *path, const char *headers,
               const char *body, char *buf, size_t cap, int *status, char *err, size_t errlen)
{
    struct rb_client_resp resp = {.body = buf, .body_cap = cap};
    int rc = rb_client_request(&o->url, method, path, headers, body, CTL_TIMEOUT_MS, &resp);
    if (rc < 0) {
        snprintf(err, errlen, "%s %s: %s", method, path, strerror(-rc));
        return rc;
    }
    *status = resp.status;
    return 0;
}

/* A JSON integer member into *out. */
static int json_i64(const char *b, size_t n, const char *key, int64_t *out)
{
    const char *v;
    size_t vl;
    int rc = rb_client_json_get(b, n, key, &v, &vl);
    return rc < 0 ? rc : dec_parse_i64(v, vl, out);
}

/* A JSON number member as an exact decimal, and its text. */
static int json_dec(const char *b, size_t n, const char *key, dec_t *out, char *txt, size_t cap)
{
    const char *v;
    size_t vl;
    int rc = rb_client_json_get(b, n, key, &v, &vl);
    if (rc < 0) return rc;
    snprintf(txt, cap, "%.*s", (int)vl, v);
    return dec_parse(v, vl, DEC_MAX, out);
}

static int get_stats(const struct rb_opts *o, struct rb_stats *s, char *err, size_t errlen)
{
    char *buf = malloc(STATS_BODY_MAX);
    int status = 0, rc = -ENOMEM;
    if (!buf) goto out;
    rc = ctl(o, "GET", "/stats", NULL, NULL, buf, STATS_BODY_MAX, &status, err, errlen);
    if (rc < 0) goto out;
    rc = -EPROTO;
    if (status != 200) {
        snprintf(err, errlen, "GET /stats answered %d", status);
        goto out;
    }
    size_t n = strlen(buf);
    const char *bad = NULL;
    if (json_i64(buf, n, "totalRequests", &s->total) < 0)
        bad = "totalRequests";
    else if (json_i64(buf, n, "uniqueUsers", &s->users) < 0)
        bad = "uniqueUsers";
    else if (json_dec(buf, n, "sum", &s->sum, s->sum_s, sizeof(s->sum_s)) < 0)
        bad = "sum";
    else if (json_dec(buf, n, "avg", &s->avg, s->avg_s, sizeof(s->avg_s)) < 0)
        bad = "avg";
    if (bad) {
        snprintf(err, errlen, "GET /stats: missing or malformed \"%s\" in %.200s", bad, buf);
        goto out;
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

/* GET path and read integer member key. */
static int get_int(const struct rb_opts *o, const char *path, const char *key, int64_t *out, char *err,
                   size_t errlen)
{
    char buf[4096];
    int status = 0;
    int rc = ctl(o, "GET", path, NULL, NULL, buf, sizeof(buf), &status, err, errlen);
    if (rc < 0) return rc;
    if (status != 200) {
        snprintf(err, errlen, "GET %s answered %d", path, status);
        return -EPROTO;
    }
    if (json_i64(buf, strlen(buf), key, out) < 0) {
        snprintf(err, errlen, "GET %s: no integer \"%s\" in %.200s", path, key, buf);
        return -EPROTO;
    }
    return 0;
}

/* POST (admin) and read string member key of a 201 answer into out. */
static int admin_create(const struct rb_opts *o, const char *path, const char *body, const char *key,
                        char *out, size_t cap, char *err, size_t errlen)
{
    char buf[4096], hdr[600];
    const char *k = getenv("RINGCOUNT_ADMIN_KEY");
    int status = 0;
    snprintf(hdr, sizeof(hdr), "X-API-Key: %s\r\n", k ? k : "");
    int rc = ctl(o, "POST", path, hdr, body, buf, sizeof(buf), &status, err, errlen);
    if (rc < 0) return rc;
    if (status != 201) {
        snprintf(err, errlen, "POST %s answered %d: %.200s", path, status, buf);
        return -EPROTO;
    }
    const char *v;
    size_t vl;
    if (rb_client_json_get(buf, strlen(buf), key, &v, &vl) < 0 || vl == 0 || vl >= cap ||
        memchr(v, '\\', vl)) {
        snprintf(err, errlen, "POST %s: no \"%s\" in %.200s", path, key, buf);
        return -EPROTO;
    }
    memcpy(out, v, vl);
    out[vl] = '\0';
    return 0;
}

/* ---- verification (main thread) --------------------------------------------------------- */

/* Compare /stats before and after with what this run sent and got acknowledged. Prints one
   line per field; returns the number of mismatches. */
static int verify_event(const struct rb_stats *b, const struct rb_stats *a, const struct rb_totals *t)
{
    int bad = 0;
    char x[DEC_FMT_MAX], y[DEC_FMT_MAX], z[DEC_FMT_MAX];
    int64_t exp_total = b->total + (int64_t)t->acked;
    if (a->total == exp_total) {
        printf("verify     totalRequests %" PRId64 " -> %" PRId64 " (+%" PRIu64
               " acknowledged): ok\n",
               b->total, a->total, t->acked);
    } else {
        printf("verify     MISMATCH totalRequests: expected %" PRId64 " (before %" PRId64
               " + %" PRIu64 " acknowledged), got %" PRId64 " (%+" PRId64 ")\n",
               exp_total, b->total, t->acked, a->total, a->total - exp_total);
        bad++;
    }
    dec_t exp_sum = b->sum + t->acked_sum;
    dec_format(exp_sum, x);
    dec_format(t->acked_sum, z);
    if (a->sum == exp_sum) {
        printf("verify     sum %s -> %s (+%s): ok\n", b->sum_s, a->sum_s, z);
    } else {
        dec_format(a->sum - exp_sum, y);
        printf("verify     MISMATCH sum: expected %s (before %s + %s acknowledged), got %s "
               "(difference %s)\n",
               x, b->sum_s, z, a->sum_s, y);
        bad++;
    }
    /* uniqueUsers: the run's users can only add to the server's set. From an empty server the
       set is exactly the distinct users acknowledged (75000-periodic, so min(acked, 75000)
       when every request was answered); otherwise before <= after <= before + distinct sent,
       and after >= the distinct users acknowledged. */
    if (b->users == 0 && t->unanswered == 0) {
        if (a->users == (int64_t)t->distinct_acked) {
            printf("verify     uniqueUsers 0 -> %" PRId64 " (exactly the distinct users "
                   "acknowledged): ok\n",
                   a->users);
        } else {
            printf("verify     MISMATCH uniqueUsers: expected %" PRIu64 ", got %" PRId64 "\n",
                   t->distinct_acked, a->users);
            bad++;
        }
    } else {
        int64_t lo = b->users > (int64_t)t->distinct_acked ? b->users : (int64_t)t->distinct_acked;
        int64_t hi = b->users + (int64_t)t->distinct_sent;
        if (a->users >= lo && a->users <= hi) {
            printf("verify     uniqueUsers %" PRId64 " -> %" PRId64 " (within %" PRId64 "..%" PRId64
                   "): ok\n",
                   b->users, a->users, lo, hi);
        } else {
            printf("verify     MISMATCH uniqueUsers: expected %" PRId64 "..%" PRId64
                   " (before %" PRId64 ", %" PRIu64 " distinct sent), got %" PRId64 "\n",
                   lo, hi, b->users, t->distinct_sent, a->users);
            bad++;
        }
    }
    dec_t exp_avg = a->total > 0 ? dec_div_round(a->sum, (uint64_t)a->total) : 0;
    dec_format(exp_avg, x);
    if (a->avg == exp_avg) {
        printf("verify     avg %s (= sum/totalRequests, half-even to 6 digits): ok\n", a->avg_s);
    } else {
        printf("verify     MISMATCH avg: expected %s (%s / %" PRId64 "), got %s\n", x, a->sum_s,
               a->total, a->avg_s);
        bad++;
    }
    return bad;
}

/* Verify increment/counter: the count grew by exactly the successes. false on mismatch. */
static bool verify_count(const struct rb_scen *s, uint64_t ok)
{
    const struct rb_opts *o = s->o;
    const char *key = o->scen == RB_COUNTER ? "value" : "count";
    char err[512];
    int64_t after = 0;
    if (get_int(o, s->check, key, &after, err, sizeof(err)) < 0) {
        printf("verify     FAILED: cannot read the %s after the run: %s\n", key, err);
        return false;
    }
    if (after - s->count_before == (int64_t)ok) {
        printf("verify     %s %" PRId64 " -> %" PRId64 " (+%" PRIu64 " acknowledged): ok\n", key,
               s->count_before, after, ok);
        return true;
    }
    printf("verify     MISMATCH %s: expected %" PRId64 " (before %" PRId64 " + %" PRIu64
           " acknowledged), got %" PRId64 "\n",
           key, s->count_before + (int64_t)ok, s->count_before, ok, after);
    return false;
}

/* ---- set-up (main thread) --------------------------------------------------------------- */

/* Counter: create a tenant and a counter under URL's path, read its value. 0, or an exit
   code. */
static int setup_counter(struct rb_scen *s, const struct rb_opts *o)
{
    char base[2048], label[96], tp[2200], tid[128], cid[128], err[512];
    if (!getenv("RINGCOUNT_ADMIN_KEY")) {
        fprintf(stderr, "ringbench: counter needs the admin key in RINGCOUNT_ADMIN_KEY\n%s",
                rb_args_usage);
        return 2;
    }
    /* URL's path is a prefix for the counter API ("/" for a server at the root) */
    snprintf(base, sizeof(base), "%s", o->url.path);
    base[strcspn(base, "?")] = '\0';
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/')
        base[--bl] = '\0';
    snprintf(label, sizeof(label), "{\"label\":\"ringbench-%d-%" PRIu64 "\"}", (int)getpid(),
             bench_now_ns());
    snprintf(tp, sizeof(tp), "%s/tenants", base);
    if (admin_create(o, tp, label, "tenant_id", tid, sizeof(tid), err, sizeof(err)) < 0) {
        fprintf(stderr, "ringbench: creating the tenant failed: %s\n", err);
        return 1;
    }
    snprintf(tp, sizeof(tp), "%s/tenants/%s/counters", base, tid);
    if (admin_create(o, tp, "{\"label\":\"ringbench\"}", "counter_id", cid, sizeof(cid), err,
                     sizeof(err)) < 0) {
        fprintf(stderr, "ringbench: creating the counter failed: %s\n", err);
        return 1;
    }
    snprintf(s->check, sizeof(s->check), "%s/tenants/%s/counters/%s", base, tid, cid);
    if (o->no_verify)
        ; /* the counter is still created: the load needs its path */
    else if (get_int(o, s->check, "value", &s->count_before, err, sizeof(err)) == 0)
        s->can_verify = true;
    else
        fprintf(stderr, "ringbench: not verifying (%s)\n", err);
    snprintf(s->path, sizeof(s->path), "%s/inc", s->check);
    printf("counter    tenant %s counter %s\n", tid, cid);
    return 0;
}

int rb_scen_setup(struct rb_scen *s, const struct rb_opts *o)
{
    s->o = o;
    char err[512];
    snprintf(s->path, sizeof(s->path), "%s", o->url.path);
    if (o->scen == RB_EVENT && !o->no_verify) {
        if (get_stats(o, &s->before, err, sizeof(err)) < 0) {
            fprintf(stderr, "ringbench: cannot read /stats before the run: %s\n", err);
            return 1;
        }
        s->can_verify = true;
    } else if (o->scen == RB_INCREMENT && !o->no_verify) {
        /* GET /api/v1/increment is the committed count, which lags fast increments not yet
           flushed; v1 and v2 move one counter, so verify against the live count (v2). */
        static const char v1[] = "/api/v1/increment";
        size_t pl = strlen(o->url.path), vl = sizeof(v1) - 1;
        if (pl >= vl && strcmp(o->url.path + pl - vl, v1) == 0)
            snprintf(s->check, sizeof(s->check), "%.*s/api/v2/increment", (int)(pl - vl),
                     o->url.path);
        else
            snprintf(s->check, sizeof(s->check), "%s", o->url.path);
        if (get_int(o, s->check, "count", &s->count_before, err, sizeof(err)) == 0)
            s->can_verify = true;
        else
            fprintf(stderr, "ringbench: not verifying (%s)\n", err);
    } else if (o->scen == RB_COUNTER) {
        int rc = setup_counter(s, o);
        if (rc) return rc;
    }
    int rc = make_request(o, s->path, &s->req);
    if (rc < 0) {
        fprintf(stderr, "ringbench: building the request: %s\n", strerror(-rc));
        return 1;
    }
    return 0;
}

bool rb_scen_verify(const struct rb_scen *s, const struct rb_totals *t, uint64_t errors)
{
    const struct rb_opts *o = s->o;
    bool ok = true;
    if (o->scen == RB_EVENT && s->can_verify) {
        char err[512];
        struct rb_stats after;
        if (get_stats(o, &after, err, sizeof(err)) < 0) {
            printf("verify     FAILED: cannot read /stats after the run: %s\n", err);
            ok = false;
        } else if (verify_event(&s->before, &after, t) > 0) {
            ok = false;
        }
    } else if (s->can_verify) {
        ok = verify_count(s, t->ok);
    }
    if (errors || t->unanswered) {
        printf("verify     FAILED: %" PRIu64 " errors, %" PRIu64
               " requests unanswered (a run that verifies has neither)\n",
               errors, t->unanswered);
        ok = false;
    }
    if (t->responses == 0) {
        printf("verify     FAILED: no responses\n");
        ok = false;
    }
    return ok;
}

void rb_scen_free(struct rb_scen *s)
{
    free(s->req.bytes);
    s->req.bytes = NULL;
}
