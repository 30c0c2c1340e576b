/*
 * fuzz_session — libFuzzer target for one connection end to end without sockets: random bytes
 * fed into a struct sess (src/session.c) with the real handlers (src/app.c, one worker,
 * memory-only), the way uring/server.c drives it.
 *
 * Input: the bytes a client sent. They are played twice on a fresh session:
 *   A: one sess_feed of everything, then every output sent whole;
 *   B: the same bytes cut at points drawn from a PRNG seeded by the input, with sends that
 *      start before more bytes arrive (the in-flight region is locked while handlers append),
 *      complete short, and are resubmitted — the io layer's worst case.
 * Each feed comes from a scratch buffer that is poisoned and freed right after (a provided
 * buffer goes back to the kernel), so a session keeping a pointer into it trips ASan.
 * At the end the clock jumps past every request deadline (sess_tick: 408 for a partial request).
 *
 * Invariants:
 *  - the bytes the kernel would send for an in-flight region never change before it completes;
 *  - the output is exactly the sequence of responses the session reported (this target's
 *    sess_ops note_response records them), each well-formed (status line, Content-Length
 *    except 204, a body of that length except for HEAD), with only "100 Continue" interim
 *    responses between them, nothing after a "Connection: close" response, and never more
 *    than SESS_OUT_MAX pending;
 *  - A and B give the same statuses in the same order: how TCP splits the bytes changes nothing.
 */
#include <errno.h>

#include "app.h"
#include "config.h"
#include "counters.h"
#include "fz.h"
#include "log.h"
#include "metrics.h"
#include "persist.h"
#include "session.h"
#include "tnapi.h"
#include "users.h"

#define T0 1000000u /* a monotonic "now" in ms (never 0: 0 means "no deadline") */
#define MAX_REC 4096
#define ADMIN_KEY "k" /* the dictionary has "X-API-Key: k" so /reset is reachable */

static struct config cfg;
static struct sess_env env;
static struct app_worker *aw;
static struct sess S;
static uint64_t iterations;

/* Final responses in the order the session produced them (status, was it to HEAD). */
struct rec {
    int status;
    bool head;
};
static struct rec recs[MAX_REC];
static size_t nrec;

/* The handlers, with every final response recorded on its way to the app's metrics. */
static void note_response(struct sess *s, int status)
{
    if (nrec < MAX_REC)
        recs[nrec] = (struct rec){.status = status, .head = s->req_head};
    nrec++;
    app_note_response(s, status);
}
static const struct sess_ops ops = {.handle = app_handle, .note_response = note_response};

static void on_kick(struct sess *s)
{
    (void)s;
}

static void on_wake(void *ctx, unsigned target)
{
    (void)ctx;
    (void)target;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_init(LOG_ERROR, 2);
    memset(&cfg, 0, sizeof(cfg));
    strcpy(cfg.admin_key, ADMIN_KEY);
    cfg.max_inflight = 16;
    cfg.durable_timeout_ms = 2000;
    cfg.node_id = 1;
    cfg.tenant_cache = 1024; /* small: tnapi_reset re-creates the store per input */
    cfg.counter_cache = 16384;
    if (cnt_init(1) < 0 || metrics_init(1) < 0 || users_init(1, 100000, 4096) < 0 ||
        app_init(&cfg, 1) < 0 || persist_init(&cfg, 1) < 0)
        abort();
    app_set_ready(true);
    static const struct app_io io = {.ctx = NULL, .wake = on_wake};
    aw = app_worker_new(0, &io);
    if (!aw)
        abort();
    env = (struct sess_env){
        .lim = HTTP_LIMITS_DEFAULT,
        .header_timeout_ms = 10000,
        .body_timeout_ms = 30000,
        .idle_timeout_ms = 60000,
        .ops = &ops,
        .app = aw,
        .kick = on_kick,
    };
    env.in_max = sess_env_in_max(&env.lim);
    sess_env_set_date(&env, 784111777);
    return 0;
}

struct wire {
    char *p;
    size_t len, cap;
};

static void wire_add(struct wire *w, const void *p, size_t n)
{
    if (w->len + n > w->cap) {
        size_t nc = w->cap ? w->cap : 4096;
        while (nc < w->len + n)
            nc *= 2;
        w->p = realloc(w->p, nc);
        FZ_CHECK(w->p != NULL, "realloc");
        w->cap = nc;
    }
    memcpy(w->p + w->len, p, n);
    w->len += n;
}

/* A send in flight: what the kernel was given (pointer and length) and a copy to compare. */
struct inflight {
    const char *ptr;
    uint32_t len;
    char *snap;
};

static void feed(const uint8_t *p, size_t n)
{
    char *scratch = fz_dup(p, n);
    FZ_CHECK(sess_feed(&S, scratch, n, T0) == 0, "sess_feed failed");
    memset(scratch, 0xA5, n);
    free(scratch);
    FZ_CHECK(S.out_len <= SESS_OUT_MAX, "out_len %u over SESS_OUT_MAX", S.out_len);
}

static void send_begin(struct inflight *f)
{
    f->len = sess_send_begin(&S);
    FZ_CHECK(f->len == S.out_len && S.out_locked == f->len, "send_begin");
    f->ptr = S.out;
    f->snap = fz_dup(S.out, f->len);
}

/* Complete k bytes of the in-flight send; a short one is resubmitted from S.out. */
static void send_done(struct inflight *f, uint32_t k, struct wire *w)
{
    FZ_CHECK(memcmp(f->ptr, f->snap, f->len) == 0, "in-flight bytes changed before completion");
    wire_add(w, f->snap, k);
    free(f->snap);
    f->snap = NULL;
    uint32_t left = sess_sent(&S, k);
    FZ_CHECK(left == f->len - k, "sess_sent left %u, want %u", left, f->len - k);
    if (left) {
        f->len = left;
        f->ptr = S.out;
        f->snap = fz_dup(S.out, left);
    } else {
        f->len = 0;
    }
}

/* What the io layer does once nothing is in flight: wake-ups, resume, send. */
static void settle(struct wire *w)
{
    for (int guard = 0; guard < 100000; guard++) {
        if (S.flags & SESS_PENDING)
            app_on_wake(aw, T0);
        if (S.in_len && !(S.flags & SESS_PENDING))
            FZ_CHECK(sess_resume(&S, T0) == 0, "sess_resume");
        if (!S.out_len)
            return;
        struct inflight f;
        send_begin(&f);
        send_done(&f, f.len, w);
    }
    FZ_CHECK(0, "output never drained");
}

/* Check wire against recs[0..nrec) and return normally if every byte is accounted for. */
static void check_wire(const struct wire *w)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    size_t off = 0, i = 0;
    bool closed = false;
    FZ_CHECK(nrec <= MAX_REC, "too many responses");
    while (off < w->len) {
        const char *p = w->p + off;
        size_t n = w->len - off;
        if (n >= sizeof cont - 1 && memcmp(p, cont, sizeof cont - 1) == 0) {
            off += sizeof cont - 1;
            continue;
        }
        FZ_CHECK(!closed, "bytes after a Connection: close response");
        FZ_CHECK(i < nrec, "response %zu was never reported", i);
        char want[16];
        int wl = snprintf(want, sizeof want, "HTTP/1.1 %d ", recs[i].status);
        FZ_CHECK(n > (size_t)wl && memcmp(p, want, (size_t)wl) == 0, "response %zu: not %s: %.20s",
                 i, want, p);
        const char *e = memmem(p, n, "\r\n\r\n", 4);
        FZ_CHECK(e != NULL, "response %zu: head not terminated", i);
        size_t hl = (size_t)(e + 4 - p);
        const char *cl = memmem(p, hl, "\r\nContent-Length: ", 18);
        size_t blen = 0;
        if (recs[i].status == 204)
            FZ_CHECK(cl == NULL, "204 with Content-Length");
        else
            FZ_CHECK(cl != NULL, "response %zu (%d) without Content-Length", i, recs[i].status);
        if (cl && !recs[i].head)
            blen = strtoul(cl + 18, NULL, 10);
        closed = memmem(p, hl, "\r\nConnection: close\r\n", 21) != NULL;
        FZ_CHECK(hl + blen <= n, "response %zu: body cut short", i);
        off += hl + blen;
        i++;
    }
    FZ_CHECK(i == nrec, "%zu responses on the wire, %zu reported", i, nrec);
}

/* Play the input once. split: B (random cuts and overlapping sends) rather than A. */
static size_t play(const uint8_t *data, size_t size, bool split, struct rec *out)
{
    struct wire w = {0};
    nrec = 0;
    sess_init(&S, &env, T0);
    if (!split) {
        feed(data, size);
        settle(&w);
    } else {
        uint64_t rng = fz_hash(data, size);
        struct inflight f = {0};
        size_t off = 0;
        while (off < size) {
            uint64_t r = fz_next(&rng);
            size_t k = (r & 3) ? 1 + (r >> 8) % 16 : 1 + (r >> 8) % 512;
            if (k > size - off)
                k = size - off;
            /* Sometimes start a send before these bytes arrive (the session must not touch the
               locked region), sometimes finish part of it after. */
            if (!f.len && S.out_len && (r & 16))
                send_begin(&f);
            feed(data + off, k);
            off += k;
            if (f.len && (r & 32)) {
                uint32_t done = 1 + (uint32_t)((r >> 32) % f.len);
                send_done(&f, done, &w);
            }
            if (!f.len) {
                if (S.flags & SESS_PENDING)
                    app_on_wake(aw, T0);
                if (S.in_len && !(S.flags & SESS_PENDING))
                    FZ_CHECK(sess_resume(&S, T0) == 0, "sess_resume");
            }
            if (sess_done(&S))
                break;
        }
        while (f.len)
            send_done(&f, f.len, &w);
        settle(&w);
    }
    /* Every deadline passes: a partial request gets its 408. */
    sess_tick(&S, T0 + 40000);
    settle(&w);
    check_wire(&w);
    if (S.flags & SESS_PENDING)
        app_forget(aw, &S);
    sess_free(&S);
    free(w.p);
    size_t n = nrec < MAX_REC ? nrec : MAX_REC;
    memcpy(out, recs, n * sizeof(*out));
    return nrec;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct rec a[MAX_REC], b[MAX_REC];
    if (size > 65536)
        return 0;
    /* Bound the state that outlives one input (users, sums). */
    struct cnt_snapshot snap;
    cnt_snapshot(&snap);
    if (++iterations % 1024 == 0 || snap.users > 50000) {
        users_reset_shard(0);
        cnt_reset_events_to(cnt_slot(0), cnt_slot(0)->reset_gen);
    }
    /* tenants created by A would make B's POST /tenants a 409 DUPLICATE_LABEL */
    if (tnapi_reset() < 0)
        abort();
    size_t na = play(data, size, false, a);
    if (tnapi_reset() < 0)
        abort();
    size_t nb = play(data, size, true, b);
    FZ_CHECK(na == nb, "%zu responses when fed whole, %zu when split", na, nb);
    for (size_t i = 0; i < na && i < MAX_REC; i++)
        FZ_CHECK(a[i].status == b[i].status && a[i].head == b[i].head,
                 "response %zu: %d whole, %d split", i, a[i].status, b[i].status);
    return 0;
}
